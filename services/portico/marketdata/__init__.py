"""Market data: exact live books, tickers and trades fanned out to many gRPC consumers."""
