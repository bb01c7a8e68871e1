"""``python -m kalshiflow.launch``: the whole system on Ray, from one command (see __main__)."""
