"""What the datatrove stages of the data side share (cleaning, translation, quality selection, and the readers of the
post-training files): reading JSONL/Parquet inputs row by row, the kept/rejected outputs, the per-step counters that
add up to kept + rejected = read, and the executors (local, Slurm, Ray) that run a chain of stages."""
