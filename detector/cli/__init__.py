"""The command-line face: each module is one command (its parser and ``main``), behind the
``tools/*.py`` scripts and the ``gdet-*`` console scripts."""
