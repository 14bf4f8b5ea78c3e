"""Image figures: many small images tiled into one grid."""

import math

import numpy as np
from numpy.typing import ArrayLike

from gaussmix.plots.style import axes_or_new, finite_array

__all__ = ["plot_image_grid"]


def plot_image_grid(
    images: ArrayLike,
    image_shape: tuple[int, int] | None = None,
    *,
    n_columns: int = 10,
    padding: int = 1,
    cmap: str = "binary",
    ax=None,
):
    """Tile images into one grid, row by row, drawn as a single image.

    Args:
        images: (N, H, W), or (N, H * W) with ``image_shape``; (N, P) with P a square
            is read as square images (e.g. 8 x 8 digits).
        image_shape: (H, W) for flattened images.
        n_columns: images per row.
        padding: blank pixels between images.
        cmap: matplotlib colormap.
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes (axis lines hidden).

    Example:
        >>> ax = plot_image_grid(np.zeros((12, 64)), n_columns=6)
        >>> ax.images[0].get_array().shape
        (17, 53)
    """
    stack = finite_array("images", images)
    if stack.ndim == 2:
        if image_shape is None:
            side = math.isqrt(stack.shape[1])
            if side * side != stack.shape[1]:
                raise ValueError(
                    f"Images of {stack.shape[1]} pixels are not square; give image_shape."
                )
            image_shape = (side, side)
        if int(np.prod(image_shape)) != stack.shape[1]:
            raise ValueError(f"image_shape {image_shape} does not hold {stack.shape[1]} pixels.")
        stack = stack.reshape(len(stack), *image_shape)
    if stack.ndim != 3 or len(stack) == 0:
        raise ValueError(f"images must have shape (N, H, W) or (N, P), got {np.shape(images)}.")
    if isinstance(n_columns, bool) or not isinstance(n_columns, int) or n_columns < 1:
        raise ValueError(f"n_columns must be a positive integer, got {n_columns!r}.")
    count, height, width = stack.shape
    columns = min(n_columns, count)
    rows = -(-count // columns)
    mosaic = np.full(
        (rows * (height + padding) - padding, columns * (width + padding) - padding), np.nan
    )
    for index, image in enumerate(stack):
        row, column = divmod(index, columns)
        top, left = row * (height + padding), column * (width + padding)
        mosaic[top : top + height, left : left + width] = image
    ax = axes_or_new(ax, figsize=(columns * 0.5 + 0.5, rows * 0.5 + 0.5))
    ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, interpolation="nearest")
    ax.set_axis_off()
    return ax
