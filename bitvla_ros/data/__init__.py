"""Datasets: episode-atomic writer and reader, statistics, chunked training samples."""
