from pytorch_cli.commands.cli import main

main()
