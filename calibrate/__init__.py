"""simcluster's GPU microbenchmarks: measure kernels, collectives and whole iterations on a GPU
host and write profiles/measured/<gpu>/*.csv with provenance.  Needs torch; never imported by
the simcluster package."""
