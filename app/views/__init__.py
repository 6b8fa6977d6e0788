"""The dashboard pages: each file is a Streamlit page script with ``main()``."""
