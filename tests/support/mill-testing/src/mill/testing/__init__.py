"""Mill's shared test helpers, loaded into every nox session's pytest as the ``mill_testing`` plugin.

- :mod:`mill.testing.cli`: :class:`~mill.testing.cli.Outcome` and the ``mill`` command run in this process.
- :mod:`mill.testing.loopback`: a real HTTP server on 127.0.0.1 that can die mid-transfer.
- :mod:`mill.testing.facts`: one finished run's :class:`~mill.core.results.RunFacts`, to vary per test.
- :mod:`mill.testing.bootstrap`: the bootstrap standard error computed resample by resample, a reference.
- :mod:`mill.testing.hub`: a Hugging Face cache seeded on disk, for ``hf-hub:`` models offline.
- :mod:`mill.testing.plugin`: the fixtures built on them (``mill_in_process``, ``serve``, ``facts``, ``zero_shot``,
  ``hub_cache``).
"""
