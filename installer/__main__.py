"""`python3 -m installer ...` runs the installer CLI from a checkout, exactly as the .pyz does."""

from installer.cli import main

if __name__ == "__main__":
    main()
