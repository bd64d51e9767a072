"""The embedded llama.cpp backend: the endpoint and its batching engine."""
