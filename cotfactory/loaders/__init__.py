"""The built-in dataset loaders, one module a dataset family.

``cotfactory.problems`` registers each by a lazy ``"module:attr"`` path, so reading a GSM8K file
imports ``gsm8k`` only. A new format is one module here plus one ``LOADERS.register`` line there
(or a ``@register_loader`` from user code). Importing this package imports no loader.
"""
