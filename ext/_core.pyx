# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""hyperplane._core: the compiled dataplane pieces.

One extension module built from included pieces (one file per concern):
  parse.pxi  packet parser (link layers, IPv4/IPv6, TCP/UDP) over C structs
  csum.pxi   RFC 1071 checksums and RFC 1624 incremental updates
  lpm.pxi    longest-prefix-match tables (route lookups)
  flowlog.pxi flow-log records (the core backend's store)
  open.pxi   planned opens inside the fast loop (the core backend's templates)
"""
include "csum.pxi"
include "parse.pxi"
include "lpm.pxi"
include "flow.pxi"
include "scan.pxi"
include "policy.pxi"
include "ports.pxi"
include "flowlog.pxi"
include "open.pxi"
