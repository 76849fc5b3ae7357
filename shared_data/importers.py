"""Read real caption datasets into a `Source`, and write one back out in Flickr8k's layout.

Two formats come in:

* Flickr8k as distributed on Kaggle: `<root>/Images/*.jpg` and `<root>/captions.txt`, a CSV with
  the header `image,caption` and one row per caption; or in its original layout:
  `Flickr8k_Dataset/Flicker8k_Dataset/*.jpg` (sic) and `Flickr8k_text/Flickr8k.token.txt`, one
  `<image>.jpg#<k><TAB><caption>` line per caption. The original split files
  (`Flickr_8k.{train,dev,test}Images.txt`) are used when they lie beside the captions file; otherwise
  the split is a seeded shuffle in Karpathy's 6000/1000/1000 proportions (shared_data.flickr8k).
* Karpathy's `dataset_{flickr8k,flickr30k,coco}.json`, which carries its own split (shared_data.karpathy).

`export_flickr8k` (shared_data.flickr_export) writes any list of `SourceImage` in the Kaggle layout
(with split files), so a subset or the synthetic set can be handed to tools that only read Flickr8k.
`import_command` tells a caption source from a prepared dataset, for the messages of load_dataset.

Every problem a user can fix is a one-line `UserError` naming the file and the line or entry at
fault; images that are listed but have no file are skipped and counted in `Source.warnings`. An image
id or Karpathy path that is not a plain relative path, or whose file is a link out of --images, is
such a problem (not a skip): nothing outside the folder the user named is read
(shared_data.dataset's docstring has the rules; shared_data.importer_input applies them).
"""

from __future__ import annotations

from pathlib import Path

from shared_data.flickr8k import ORIGINAL_IMAGE_DIRS, TOKEN_FILE
from shared_data.importer_input import IMAGES_FLAG, KARPATHY_FLAG


def import_command(path: Path) -> tuple[list[str], str] | None:
    """(prepare's arguments, the dataset name they give) when `path` is a caption source that prepare
    imports (a Flickr8k folder, a Karpathy JSON) rather than a prepared dataset; else None."""
    path = Path(path)
    markers = ("Images", "captions.txt", TOKEN_FILE, "Flickr8k_text", *ORIGINAL_IMAGE_DIRS)
    try:
        if path.is_file() and path.name.startswith("dataset_") and path.suffix == ".json":
            return (["karpathy", KARPATHY_FLAG, str(path), IMAGES_FLAG, "DIR"],
                    "karpathy-" + path.stem.removeprefix("dataset_"))
        if path.is_dir() and any((path / m).exists() for m in markers):
            return ["flickr8k", IMAGES_FLAG, str(path)], "flickr8k"
    except OSError:  # unreadable: not recognisably a source
        pass
    return None
