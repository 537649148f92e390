from pytorch_cli.cli import main

main()
