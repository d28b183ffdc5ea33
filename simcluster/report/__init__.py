"""Result tables, plots (the only place matplotlib is imported), reports and Chrome traces."""
