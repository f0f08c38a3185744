"""The data: importing labelled images (importing.py), reading images, DICOM and CSV manifests, picture
primitives, the built-in demo and the benchmark sets with a known shortcut."""
