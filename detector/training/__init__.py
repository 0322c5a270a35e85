"""Training: the region classifier (R-CNN fine-tuning) and the MultiBox network, one loop.

    from detector.training.loop import train
    from detector.training.config import load_train_config
    train(load_train_config("configs/raccoon_cpu.yaml"), device="auto")

`loop` runs either task (solver, resume, DDP, checkpoints, validation); `classifier` and
`multibox` build each task's model, data and step; `core` holds what both use (the epoch's
batches, photometric distortion, RNG state, the region loss); `config` is the torch-free
training config; `run_files` the run folder's metrics and checkpoints. Nothing here is imported
by the rest of the library: only the train command and `detector.train` call it.
"""
