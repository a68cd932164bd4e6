"""Every file segprep writes and reads back, each written and parsed in one module named for it:

- records.py: a crop as a `tf.train.Example` (the record keys, encode and decode, without TensorFlow);
- tfrecord.py: TFRecord framing (write and read a record, checksums);
- shards.py: shard files (names, sizes, the one function that writes a shard);
- metadata.py: metadata.json (with the statistics it reports) and errors/SPLIT.jsonl;
- run_dir.py: a training run's folder and its segprep.json;
- predictions.py: the manifest of what predict wrote in an output folder.

Nothing outside this package spells a record key or a metadata key.
"""
