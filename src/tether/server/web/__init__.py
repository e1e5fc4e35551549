"""Server-rendered pages: login, device approval, and (issue 6) the web client."""
