"""OTLP receiver (gRPC and HTTP), write-ahead log, decoding, normalisation and the lake writer."""
