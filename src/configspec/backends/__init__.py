"""Inference engines behind one small Protocol: llama.cpp, n-gram, OpenAI-compatible remote."""
