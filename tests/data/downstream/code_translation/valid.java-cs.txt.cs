public virtual int Size() {return count;}
