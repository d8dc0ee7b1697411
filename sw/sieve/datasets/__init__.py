"""Readers for the on-disk formats SIEVE accepts: MNIST-style idx files, CIFAR-10 (JPEG
tar, class folders, python pickles) and ImageNet-style image collections.  They return raw
uint8 pixels and labels; preprocessing for a particular model is applied by the zoo."""
