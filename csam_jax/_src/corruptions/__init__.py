"""CIFAR-10-C corruptions (Hendrycks & Dietterich, ICLR 2019) in pure JAX.

Modules: ``resample`` (static linear operators: Gaussian filters, zooms,
Pillow box resizes, boundary modes, bilinear sampling), ``color`` (HSV),
``noise``, ``blur``, ``weather`` (fog, frost, snow), ``spatter``,
``digital`` (brightness, contrast, saturate, elastic, pixelate), ``jpeg``
(with ``islow``, libjpeg's integer DCT) and ``registry`` (names, severity
tables, ``corrupt``, the sampler).
"""
