"""The HTTP edge of Nephelios: GitHub webhook intake, admin API, and the command line.

Depends on `pipeline` for everything it decides and does; `pipeline` never imports this.
"""
