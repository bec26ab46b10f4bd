"""LIBERO simulation wrapper and scripted expert."""
