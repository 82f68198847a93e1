"""Show code (亮码接种): signed single-use codes, their QR images and the code page."""
