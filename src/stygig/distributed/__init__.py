"""StyGig on a Ray cluster: ``build``, ``batch`` and ``serve`` with ``--engine ray``.

Shell, like :mod:`stygig.batch` and :mod:`stygig.serving`: it drives the core (the build's
per-item preparation, the artifact writer, the recommender's ``prepare -> embed -> answer``)
from Ray Data stages and a Ray Serve deployment; the core never imports it.

* :mod:`stygig.distributed.command` — the ``--engine`` flags and the dispatch (standard library
  only at import time: ``--engine local``, the default, never imports Ray);
* :mod:`stygig.distributed.cluster` — joining (or starting) a cluster, its resources;
* :mod:`stygig.distributed.ray_build` — ``stygig build --engine ray``;
* :mod:`stygig.distributed.ray_batch` — ``stygig batch --engine ray``;
* :mod:`stygig.distributed.ray_serve` — ``stygig serve --engine ray``.

Ray is the optional ``ray`` extra (``pip install 'stygig[ray]'``); see ``docs/ray.md``.
"""
