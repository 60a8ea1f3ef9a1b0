"""Small widgets that the main window assembles: host, prompt, jobs and results."""
