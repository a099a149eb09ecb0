"""The physical backend: VISA instrument drivers, the controller-board client, the lab tile."""
