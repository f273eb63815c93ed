"""Tables, JSON, plots and the HTML report."""
