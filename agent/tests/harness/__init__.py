"""Test harness: hosts made of network namespaces with their own Docker engine, a real etcd, a test image."""
