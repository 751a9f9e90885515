"""Image-space stylisation losses: Gram and nearest-neighbour feature matching on random or VGG features."""
