"""(placeholder, filled by its module)"""
