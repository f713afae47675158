"""Stream processing: pure clinical core modules and the thin faust app over them."""
