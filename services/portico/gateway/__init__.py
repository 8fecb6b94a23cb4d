"""The HTTP/JSON edge (`portico-gateway`): the source documents' REST endpoints over the gRPC services."""
