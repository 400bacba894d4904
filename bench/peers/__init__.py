"""Other engines doing bench/baseline.py's job (Parquet -> LightGBM -> Parquet), for `make bench`.

Each is run as `python -m bench.peers.<name> --input DIR --model model.txt --output DIR`, prints
`{"rows": ..., "seconds": ...}` as its last stdout line, and exits 3 when its engine is not
installed (`make bench-peers` installs them).
"""
