"""What the window shows, computed without Qt: the dataset browser's table, the viewer's images and
explanations, and the expert's review queue."""
