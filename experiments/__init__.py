"""Experiments: step functions that confpipe configs point at (``fn: experiments.<module>.<fn>``).

Each function is called as ``fn(output_path=..., **config)``, writes its files under
``output_path`` (a local path or any fsspec URL) and returns a JSON-serializable summary that
downstream code reads with ``confpipe.load_result(output_path)``.
"""
