"""Benchmarks: prtip_nb against nmap, side by side in the same run, in a private namespace."""
