"""A small asyncio CNI client (stdlib only), usable without the rest of pycri.

    loaded = config.load_dir(Path("/etc/cni/net.d"), plugin_dirs)   # first valid conflist
    net = network.CNINetwork(loaded.config, plugin_dirs, cache_dir, timeout=30)
    result = await net.add(container_id, "/run/netns/x", "eth0", args=k8s.cni_args(...),
                           capability_args=k8s.capability_args(...))
    result.pod_ips("eth0")                                          # IPv4 first, then IPv6
    await net.delete(container_id, "/run/netns/x", "eth0")          # also after a failed add

Modules: config (conf dir loading), invoke (running one plugin), result (parsing results),
cache (the libcni-compatible result cache), network (ADD/DEL/CHECK), k8s and quantity
(Kubernetes CNI_ARGS and capability args), errors.
"""
