"""Small foundations every phase uses: Hub/local loading, the VAE, Arrow columns, atomic files, argument
checks, image preprocessing.
"""
