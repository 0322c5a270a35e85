"""Convert proposals between our cache and the files detectron2, Detectron, mmdetection and Fast R-CNN read.

    python tools/convert_proposals.py cache/voc07_trainval voc_2007_trainval.mat --to fast-rcnn \\
        --gt VOCdevkit/VOC2007 --split trainval
    python tools/convert_proposals.py voc_2007_trainval.mat cache/voc07_ff \\
        --gt VOCdevkit/VOC2007 --split trainval
    python tools/convert_proposals.py cache/coco_val coco_val_proposals.pkl --to detectron2

The command is `detector.cli.convert_proposals` (also installed as ``gdet-convert-proposals``);
the library behind it is `proposals.formats` (``convert_proposals``). ``--help`` lists every
flag with its default.
"""
import sys

from detector.cli.convert_proposals import main

if __name__ == "__main__":
    sys.exit(main())
