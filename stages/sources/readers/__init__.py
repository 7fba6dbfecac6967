"""Readers for the raw dataset formats (CIFAR batches, .pth, image folders, IDX, CSV, pets)."""
