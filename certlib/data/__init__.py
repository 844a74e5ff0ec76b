"""What gets explained: bundled galleries, checked uploads and preprocessing, the digits split, image folders."""
