"""The serving simulator: replicas, batching policies, KV cache, routers, prefill/decode disaggregation."""
