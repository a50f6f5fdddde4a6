"""Reading input images and finding them on disk."""
