"""Training scripts for the two seg2vid stages (``train_image.py``, ``train_video.py``) and their export."""
