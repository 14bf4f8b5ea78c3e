"""Back ends that fit gaussmix models: EM/MAP, NUTS, relabeling, diagnostics."""
