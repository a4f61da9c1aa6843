//! Recurrent networks: `Lstm` and `Gru` with PyTorch's tensor names on a fused recurrent op.
