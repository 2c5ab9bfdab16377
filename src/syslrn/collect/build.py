"""Build placeholder: replaced by the BPF build in the same change."""
