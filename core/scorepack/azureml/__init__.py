"""scorepack under Azure ML's inference server (azmlinfsrv).

* :mod:`.runtime`: what a generated ``score.py`` calls, ``init()`` and ``run()``;
* :mod:`.settings`: azmlinfsrv's environment for a package (one worker, gunicorn threads);
* :mod:`.layout`: where Azure ML mounts the model, and that layout made locally;
* :mod:`.host`: ``scorepack serve-azureml PKG`` (with :mod:`.envcheck` and
  :mod:`.isolated`), through :mod:`.launch`, which binds azmlinfsrv to a chosen address.

Nothing here imports azmlinfsrv or Flask until a request is answered or a server starts.
"""
