"""Test infrastructure built from registry packages: Go builds, cgroups, servers."""
