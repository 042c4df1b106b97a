"""Tasks: plain functions of a composed config that the commands and the tests call.

``nfvae.training.train`` fits; ``nll``, ``ood`` and ``diagnose`` (``eval.py task=...``,
conf/task/) and ``visualize`` read any checkpoint through ``nfvae.loading.load_module``
and share their set-up (``nfvae.tasks.common``).
"""
