"""From a MURA-shaped tree to tensors: the index of a tree and its splits (`sources`), the images, their cache,
the task's targets and the datasets (`images`), and the embedded phantom that stands in for MURA (`phantom`).

The names below are the package's interface; `images` and `sources` hold them."""

from .images import (
    TASKS, ABNORMALITY_CLASSES, CACHE_VERSION, PIXEL_MEAN, PIXEL_STD, SUBSETS, MIN_TRAIN_IMAGES, MURA_REL_PATH,
    DataError, DegenerateData, task_targets, class_counts, check_task_data, ImageReadError, read_image,
    letterbox, image_stats, ImageCache, cache_key, build_cache, to_input, standardize, CachedImages, PngImages,
    BatchAugment, AUGMENTATIONS, augmentation, make_loader, LESION_BITS, LESION_FRACTURE, LESION_HARDWARE,
    LESION_CAST, LESION_DEGENERATIVE, OBJECTS, without_object_positives, mask_paths, read_masks, masks_for,
)
from .sources import (
    prepare_unfamiliar, prepare, SPLITS, INDEX_COLUMNS, find_mura_root, load_index, carve_validation,
    resolve_data, resolve_unfamiliar, source_note,
)
