"""seg2vid: video generation from a single semantic label map (Pan et al., CVPR 2019)."""

__version__ = "0.1.0"

__all__ = ["Seg2VidPipeline", "Seg2VidOutput", "__version__"]


def __getattr__(name):  # import the pipeline lazily: `import seg2vid.labels` must stay light
    if name in ("Seg2VidPipeline", "Seg2VidOutput"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'seg2vid' has no attribute {name!r}")
