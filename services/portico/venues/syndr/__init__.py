"""Syndr: JSON-RPC 2.0 over HTTP and WebSocket, EIP-712 signed orders."""
